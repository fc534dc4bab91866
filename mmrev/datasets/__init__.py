"""Built-in datasets made from data that ships with scikit-learn (nothing downloaded):
handwritten digits as images (classification) and pasted on photographs (detection)."""
