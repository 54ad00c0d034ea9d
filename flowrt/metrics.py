"""Every Prometheus metric flowrt exports, declared together on a registry passed in.

Labels stay bounded: workflow, outcome, action — never an execution or event id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events_appended = Counter(
            "flowrt_events_appended_total", "Events committed to the log by the API.",
            ["workflow"], registry=registry)
        self.publish_failures = Counter(
            "flowrt_publish_failures_total",
            "Hints that could not be published after the commit (left to the relay).",
            registry=registry)
        self.auth_failures = Counter(
            "flowrt_auth_failures_total",
            "Requests refused for their credentials (401) or their key's role (403).",
            ["reason"], registry=registry)
        self.rate_limited = Counter(
            "flowrt_rate_limited_total", "Requests refused by a tenant's rate limit (429).",
            registry=registry)
        self.rate_limit_open = Counter(
            "flowrt_rate_limit_fail_open_total",
            "Requests let through unchecked because Redis could not answer the rate limiter.",
            registry=registry)
        self.events_processed = Counter(
            "flowrt_events_processed_total", "Events processed by workers, by outcome.",
            ["workflow", "outcome"], registry=registry)
        self.processing_seconds = Histogram(
            "flowrt_event_processing_seconds", "Time to process one event (actions included).",
            ["workflow"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.latency_seconds = Histogram(
            "flowrt_event_latency_seconds", "End-to-end latency: appended to processed.",
            ["workflow"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.actions = Counter(
            "flowrt_actions_total", "Action attempts, by outcome (ok, retry, failed).",
            ["action", "outcome"], registry=registry)
        self.messages_reclaimed = Counter(
            "flowrt_messages_reclaimed_total", "Hints taken over from idle consumers.",
            registry=registry)
        self.dead_letters = Counter(
            "flowrt_dead_letters_total", "Hints moved to the dead-letter stream.",
            registry=registry)
        self.hints_republished = Counter(
            "flowrt_hints_republished_total",
            "Hints published by the relay, the reconciler, or a worker's look at the log"
            " after its release.",
            ["source"], registry=registry)
        self.lease_lost = Counter(
            "flowrt_lease_lost_total", "Fenced commits that applied nothing (another worker won).",
            registry=registry)
        self.lock_wait_seconds = Histogram(
            "flowrt_lock_wait_seconds", "Time spent waiting for an execution lock.",
            buckets=_LATENCY_BUCKETS, registry=registry)
        self.stream_length = Gauge(
            "flowrt_stream_length", "Entries in the hint stream (acked entries are deleted).",
            registry=registry)
        self.stream_pending = Gauge(
            "flowrt_stream_pending", "Hints delivered to a consumer and not yet acknowledged.",
            registry=registry)
        self.consumers_pruned = Counter(
            "flowrt_consumers_pruned_total",
            "Idle consumers with nothing pending removed from the group.", registry=registry)
        # What `flowrt doctor` checks, as every worker sees it (see flowrt.health).
        self.stuck_executions = Gauge(
            "flowrt_stuck_executions",
            "Executions not blocked whose next event has waited unprocessed over 60 s.",
            registry=registry)
        self.dead_events = Gauge(
            "flowrt_dead_events", "Events marked dead (each blocks its execution).",
            registry=registry)
        self.unpublished_events = Gauge(
            "flowrt_unpublished_events",
            "Events whose hint has not reached Redis 60 s after the append.", registry=registry)
        self.stale_pending_hints = Gauge(
            "flowrt_stale_pending_hints",
            "Hints pending (unacknowledged) longer than the claim timeout.", registry=registry)
        self.idle_consumers = Gauge(
            "flowrt_idle_consumers",
            "Consumers holding pending hints, idle longer than the claim timeout.",
            registry=registry)
