"""Fine-tuning inside the service behind OpenAI's files and fine-tuning API: LoRA adapters now."""
