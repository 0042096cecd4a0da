"""Plotly heatmaps, HTML token highlighting and report assembly (no TransformerLens here)."""
