"""prunesearch.methods.cost"""
