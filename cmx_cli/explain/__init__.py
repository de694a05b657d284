"""Which bases drive a model's output: in-silico mutagenesis, saliency, masked-base profiles."""

#: How `cmx explain` attributes a classifier's output to bases (ISM, gradient x input).
METHODS = ("ism", "gradient")
