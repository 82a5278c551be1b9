<?xml version="1.0"?>
<!-- Attach every NIC to the libvirt network $network, whatever the job asked for (keeping its
     MAC, model and link state).  List that network in VMSUBMIT_ALLOWED_NETWORKS too, or the
     runner's safety check refuses it. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:param name="network" select="'default'"/>

  <xsl:template match="@*|node()">
    <xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>
  </xsl:template>

  <xsl:template match="/domain/devices/interface">
    <interface type="network">
      <source network="{$network}"/>
      <xsl:copy-of select="mac|model|link"/>
    </interface>
  </xsl:template>
</xsl:stylesheet>
