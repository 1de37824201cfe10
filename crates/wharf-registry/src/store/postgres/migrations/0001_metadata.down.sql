DROP TABLE tags;
DROP TABLE manifests;
DROP TABLE blob_links;
DROP TABLE repositories;
