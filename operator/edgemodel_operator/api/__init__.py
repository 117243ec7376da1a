"""Typed models of the EdgeModel API: spec parsing, accelerator profiles, conditions."""
