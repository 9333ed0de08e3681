"""prunesearch.methods.models"""
