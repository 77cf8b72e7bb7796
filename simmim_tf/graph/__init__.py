"""The graph: dense encoder outputs -> GraphTensor, attention layers, fusion."""
