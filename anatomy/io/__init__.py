"""anatomy.io"""
