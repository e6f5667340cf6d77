//! Charts drawn as inline SVG (no script, no image requests).
