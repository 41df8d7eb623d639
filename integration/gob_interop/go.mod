module rrjobs/gob_interop

go 1.25.0
