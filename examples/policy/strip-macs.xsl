<?xml version="1.0"?>
<!-- Remove every interface's MAC address, so libvirt generates a fresh one per job
     (two jobs started from the same XML never collide). -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="@*|node()">
    <xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>
  </xsl:template>

  <xsl:template match="/domain/devices/interface/mac"/>
</xsl:stylesheet>
