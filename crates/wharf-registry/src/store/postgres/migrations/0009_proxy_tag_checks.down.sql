DROP TABLE proxy_tag_checks;
