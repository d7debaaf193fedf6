-- `deskledger status` reads the tickets with suspected gaps through this index instead of
-- summing a column over every ticket (issue 17): it holds only the tickets that have one.
CREATE INDEX tickets_suspected_gaps_idx ON tickets (ticket_id) WHERE suspected_gaps > 0;
