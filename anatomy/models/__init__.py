"""anatomy.models"""
