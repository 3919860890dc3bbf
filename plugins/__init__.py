"""AIOS's own plugins, written against the public hooks exactly as a third party would write them."""
