"""logmac.sim"""
