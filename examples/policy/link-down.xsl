<?xml version="1.0"?>
<!-- Start every NIC with its link down: the guest sees its interfaces but no traffic flows. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:template match="@*|node()">
    <xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>
  </xsl:template>

  <xsl:template match="/domain/devices/interface">
    <xsl:copy>
      <xsl:apply-templates select="@*|node()[not(self::link)]"/>
      <link state="down"/>
    </xsl:copy>
  </xsl:template>
</xsl:stylesheet>
