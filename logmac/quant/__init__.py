"""logmac.quant"""
