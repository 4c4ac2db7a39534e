"""Incident analysis: an evidence pack per incident, analysts (Ollama, OpenAI-compatible, rules)
behind one interface, a grounding check, and the stored analyses (docs/incident-analysis.md)."""
