"""prunesearch.cluster"""

if __name__ != "prunesearch.cluster":
    raise ImportError(
        "the 'cluster' folder is part of the prunesearch distribution and must be imported as "
        "'prunesearch.cluster' (install it with: pip install -e . ; then: import prunesearch.cluster)"
    )
