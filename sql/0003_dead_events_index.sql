-- `flowrt doctor` and every worker's gauges count the dead events every few seconds.
-- Dead events are few and the log is large: a partial index makes that count a look
-- at the dead rows only, never a scan of event_processing. (The other checks use the
-- partial indexes of 0001: executions_lagging and event_processing_unpublished.)
CREATE INDEX event_processing_dead ON event_processing (processed_at) WHERE status = 'dead';
