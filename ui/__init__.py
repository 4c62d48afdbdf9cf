"""The two front doors: the `rag` command line and the Streamlit page."""
