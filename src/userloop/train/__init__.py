"""Training utilities shared by the user-LM, assistant, reward-model and DPO trainers."""
