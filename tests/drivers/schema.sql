-- What the driver scripts expect in database pgdog, for one login role.
-- psql variables: role (the role the script logs in as; its password is set
-- separately), schema_a and schema_b (must be "<role>_a" and "<role>_b").
-- tests/tests/drivers.rs runs this as a superuser for each driver, e.g.
--   psql -v role=drv -v schema_a=drv_a -v schema_b=drv_b -f schema.sql
--
-- Tables live in schema <role>, found through the default search_path
-- ("$user", public). The scripts SET search_path to "<role>_a, <role>" or
-- "<role>_b, <role>" and tell them apart by the row in `marker`.
CREATE SCHEMA :"role" AUTHORIZATION :"role";
CREATE SCHEMA :"schema_a" AUTHORIZATION :"role";
CREATE SCHEMA :"schema_b" AUTHORIZATION :"role";
SET ROLE :"role";
CREATE TABLE :"role".items (
    client int NOT NULL,
    iter int NOT NULL,
    label text,
    amount numeric,
    at timestamptz,
    payload bytea,
    tags text[],
    note text,
    PRIMARY KEY (client, iter)
);
CREATE TABLE :"schema_a".marker (v text NOT NULL);
INSERT INTO :"schema_a".marker VALUES ('a');
CREATE TABLE :"schema_b".marker (v text NOT NULL);
INSERT INTO :"schema_b".marker VALUES ('b');
RESET ROLE;
