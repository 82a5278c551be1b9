<?xml version="1.0"?>
<!-- Reject any VM with a cdrom or floppy drive; the message becomes the job's hold reason. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="/">
    <xsl:for-each select="/domain/devices/disk[@device = 'cdrom' or @device = 'floppy'][1]">
      <xsl:message terminate="yes">
        <xsl:value-of select="concat(@device, ' drive ', target/@dev, ' is not allowed on this pool')"/>
      </xsl:message>
    </xsl:for-each>
    <xsl:copy-of select="."/>
  </xsl:template>
</xsl:stylesheet>
