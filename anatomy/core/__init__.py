"""anatomy.core"""
