"""logmac.cosim"""
