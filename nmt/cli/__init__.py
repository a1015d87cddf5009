"""Thin argparse front ends; only this package parses arguments, logs to the console and exits."""
