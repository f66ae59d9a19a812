#!/usr/bin/env python3
"""Writes slotd.json, the Grafana dashboard (run from anywhere: python3 deploy/grafana/build-dashboard.py;
with --check it only verifies that slotd.json is up to date).

The JSON is generated so that every panel has the same shape; edit the PANELS list, re-run, and
commit both files. CI checks that slotd.json is what this script writes and that every metric it
queries is one a live slotd exports (tests/observability.rs).
"""
import json
import os
import sys

SEL = 'instance=~"$instance"'
RATE = "$__rate_interval"
BOOK = 'method="slotd.v1.BookingService/BookAppointment"'
SERVER_ERRORS = 'code=~"Unknown|Internal|Unavailable|DataLoss|DeadlineExceeded|Unimplemented"'

# (title, kind, unit, width, [(expr, legend)])
PANELS = [
    ("Serving (health)", "stat", "none", 4, [(f"min(slotd_serving{{{SEL}}})", "serving")]),
    ("Store answers", "stat", "none", 4, [(f"min(slotd_store_up{{{SEL}}})", "store up")]),
    ("Version", "stat", "none", 4, [(f"count by (version) (slotd_build_info{{{SEL}}})", "{{version}}")]),
    ("Replicas scraped", "stat", "none", 4, [(f"count(slotd_build_info{{{SEL}}})", "replicas")]),
    ("Seats remaining (next metrics.seats_days days)", "stat", "none", 8,
     [(f"max by (post) (slotd_seats_remaining{{{SEL}}})", "{{post}}")]),
    ("Calls per second by method", "timeseries", "reqps", 12,
     [(f"sum by (method) (rate(slotd_rpc_requests_total{{{SEL}}}[{RATE}]))", "{{method}}")]),
    ("Server error ratio", "timeseries", "percentunit", 12,
     [(f"sum(rate(slotd_rpc_requests_total{{{SEL},{SERVER_ERRORS}}}[{RATE}])) / sum(rate(slotd_rpc_requests_total{{{SEL}}}[{RATE}]))", "errors / calls")]),
    ("BookAppointment latency", "timeseries", "s", 12,
     [(f"histogram_quantile(0.99, sum by (le) (rate(slotd_rpc_duration_seconds_bucket{{{SEL},{BOOK}}}[{RATE}])))", "p99"),
      (f"histogram_quantile(0.5, sum by (le) (rate(slotd_rpc_duration_seconds_bucket{{{SEL},{BOOK}}}[{RATE}])))", "p50")]),
    ("Booking outcomes per second", "timeseries", "reqps", 12,
     [(f"sum by (outcome) (rate(slotd_bookings_total{{{SEL}}}[{RATE}]))", "{{outcome}}")]),
    ("Waiting room", "timeseries", "none", 12,
     [(f"max by (state) (slotd_waiting_room{{{SEL}}})", "{{state}}"),
      (f"max(rate(slotd_waiting_room_admitted_total{{{SEL}}}[{RATE}])) * 60", "admitted per minute"),
      (f"max(rate(slotd_waiting_room_expired_total{{{SEL}}}[{RATE}])) * 60", "expired per minute"),
      (f"max(slotd_waiting_room_admitting{{{SEL}}})", "admitting (1/0)")]),
    ("Rate-limited calls per second", "timeseries", "reqps", 12,
     [(f"sum by (limit) (rate(slotd_rate_limited_total{{{SEL}}}[{RATE}]))", "{{limit}}")]),
    ("Redis latency p99 by operation", "timeseries", "s", 12,
     [(f"histogram_quantile(0.99, sum by (le, op) (rate(slotd_redis_duration_seconds_bucket{{{SEL}}}[{RATE}])))", "{{op}}")]),
    ("Redis errors per second", "timeseries", "reqps", 12,
     [(f"sum by (op) (rate(slotd_redis_errors_total{{{SEL}}}[{RATE}]))", "{{op}}")]),
    ("Slot feed", "timeseries", "none", 12,
     [(f"sum(slotd_slot_feed_watchers{{{SEL}}})", "watchers"),
      (f"sum(rate(slotd_slot_feed_day_reads_total{{{SEL}}}[{RATE}]))", "day reads/s"),
      (f"sum(rate(slotd_slot_feed_events_total{{{SEL}}}[{RATE}]))", "events/s"),
      (f"sum(rate(slotd_slot_feed_ticks_total{{{SEL}}}[{RATE}]))", "ticks/s")]),
    ("gRPC connections", "timeseries", "none", 12,
     [(f"sum by (instance) (slotd_grpc_connections{{{SEL}}})", "open {{instance}}"),
      (f"sum by (instance) (rate(slotd_grpc_connections_accepted_total{{{SEL}}}[{RATE}]))", "accepted/s {{instance}}")]),
    ("CPU (cores)", "timeseries", "none", 8,
     [(f"rate(process_cpu_seconds_total{{{SEL}}}[{RATE}])", "{{instance}}")]),
    ("Resident memory", "timeseries", "bytes", 8,
     [(f"process_resident_memory_bytes{{{SEL}}}", "{{instance}}")]),
    ("Open file descriptors", "timeseries", "none", 8,
     [(f"process_open_fds{{{SEL}}}", "open {{instance}}"),
      (f"process_max_fds{{{SEL}}}", "limit {{instance}}")]),
]


def panel(i, x, y, title, kind, unit, width, targets):
    return {
        "id": i,
        "type": kind,
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 4 if kind == "stat" else 8, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}, "textMode": "auto"},
        "targets": [
            {
                "refId": chr(ord("A") + n),
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "expr": expr,
                "legendFormat": legend,
            }
            for n, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard():
    panels, x, y, row_h = [], 0, 0, 0
    for i, (title, kind, unit, width, targets) in enumerate(PANELS, start=1):
        if x + width > 24:
            x, y, row_h = 0, y + row_h, 0
        p = panel(i, x, y, title, kind, unit, width, targets)
        panels.append(p)
        x += width
        row_h = max(row_h, p["gridPos"]["h"])
    return {
        "uid": "slotd",
        "title": "slotd",
        "description": "slotd: health, calls, bookings, waiting room, Redis, process. Alerts: deploy/prometheus/alerts.yml.",
        "tags": ["slotd"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"},
                {
                    "name": "instance",
                    "label": "Replica",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": {"query": "label_values(slotd_build_info, instance)", "refId": "instance"},
                    "definition": "label_values(slotd_build_info, instance)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {"text": "All", "value": "$__all"},
                    "refresh": 2,
                },
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


if __name__ == "__main__":
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "slotd.json")
    text = json.dumps(dashboard(), indent=2) + "\n"
    if "--check" in sys.argv[1:]:
        with open(out) as f:
            if f.read() != text:
                sys.exit(f"{out} is stale: run python3 {sys.argv[0]} and commit it")
        print(f"{out}: up to date")
    else:
        with open(out, "w") as f:
            f.write(text)
        print(f"wrote {out}")
