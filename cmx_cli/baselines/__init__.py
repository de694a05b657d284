"""The baselines reported beside every cmx model, fitted on the same training data: k-mer
frequencies (`cmx train`), base frequencies and a Markov chain (`cmx pretrain`), and the
±flank logistic regression (`cmx finetune`). A deep model that does not beat its baseline
has not earned its cost."""
