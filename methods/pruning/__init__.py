"""prunesearch.methods.pruning"""
