"""Rerunnable measurements (backup, restore, dedup, synth, rehearsal), each a ratio against a
baseline run side by side; results.json feeds the README's figures."""
