#!/usr/bin/python3
"""Parses a Prometheus text exposition on stdin with prometheus_client's parser (so a
malformed one fails here) and prints its samples as one JSON object, each key the
sample's name followed by its labels sorted, as `name{a="1",b="2"}`."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
json.dump(samples, sys.stdout, indent=1, sort_keys=True)
