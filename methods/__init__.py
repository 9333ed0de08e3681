"""prunesearch.methods"""

if __name__ != "prunesearch.methods":
    raise ImportError(
        "the 'methods' folder is part of the prunesearch distribution and must be imported as "
        "'prunesearch.methods' (install it with: pip install -e . ; then: import prunesearch.methods)"
    )
