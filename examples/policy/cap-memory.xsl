<?xml version="1.0"?>
<!-- Cap guest memory (and currentMemory) at $max_mib MiB; everything else passes unchanged.
     The job's log and its VMPolicyChanges attribute then say e.g. "memory 8 GiB -> 4 GiB". -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:param name="max_mib" select="4096"/>

  <xsl:template match="@*|node()">
    <xsl:copy><xsl:apply-templates select="@*|node()"/></xsl:copy>
  </xsl:template>

  <xsl:template match="/domain/memory|/domain/currentMemory">
    <xsl:variable name="kib">
      <xsl:call-template name="kib"><xsl:with-param name="size" select="."/></xsl:call-template>
    </xsl:variable>
    <xsl:choose>
      <xsl:when test="number($kib) &gt; $max_mib * 1024">
        <xsl:copy><xsl:attribute name="unit">MiB</xsl:attribute><xsl:value-of select="$max_mib"/></xsl:copy>
      </xsl:when>
      <xsl:otherwise><xsl:copy-of select="."/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <!-- KiB of a libvirt size element: units as libvirt reads them (KB = 1000 bytes, K/KiB = 1024). -->
  <xsl:template name="kib">
    <xsl:param name="size"/>
    <xsl:variable name="unit" select="translate($size/@unit, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')"/>
    <xsl:variable name="n" select="number(normalize-space($size))"/>
    <xsl:choose>
      <xsl:when test="$unit = 'b' or $unit = 'bytes'"><xsl:value-of select="$n div 1024"/></xsl:when>
      <xsl:when test="$unit = 'kb'"><xsl:value-of select="$n * 1000 div 1024"/></xsl:when>
      <xsl:when test="$unit = 'mb'"><xsl:value-of select="$n * 1000000 div 1024"/></xsl:when>
      <xsl:when test="$unit = 'm' or $unit = 'mib'"><xsl:value-of select="$n * 1024"/></xsl:when>
      <xsl:when test="$unit = 'gb'"><xsl:value-of select="$n * 1000000000 div 1024"/></xsl:when>
      <xsl:when test="$unit = 'g' or $unit = 'gib'"><xsl:value-of select="$n * 1048576"/></xsl:when>
      <xsl:when test="$unit = 'tb'"><xsl:value-of select="$n * 1000000000000 div 1024"/></xsl:when>
      <xsl:when test="$unit = 't' or $unit = 'tib'"><xsl:value-of select="$n * 1073741824"/></xsl:when>
      <xsl:otherwise><xsl:value-of select="$n"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>
</xsl:stylesheet>
