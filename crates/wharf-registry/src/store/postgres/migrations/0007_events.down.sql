DROP TABLE event_endpoints;
DROP TABLE events;
