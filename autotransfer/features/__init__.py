"""What the product builds on the search: the report of one search, the benchmark of many, the demo
datasets. The search itself (``autotransfer.engine``) knows none of them."""
