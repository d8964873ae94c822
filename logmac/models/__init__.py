"""logmac.models"""
