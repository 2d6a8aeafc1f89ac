"""UPS readers (NUT network protocol, SNMP UPS-MIB and APC PowerNet) and the power view."""
