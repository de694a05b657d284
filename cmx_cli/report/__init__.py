"""`cmx report`: the runs it reads, the numbers behind each figure, and the figures."""
