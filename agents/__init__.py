"""Agents: PPO on the device, networks, the SB3 backend and policy loading (later issues)."""
