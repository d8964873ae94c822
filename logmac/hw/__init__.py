"""logmac.hw"""
