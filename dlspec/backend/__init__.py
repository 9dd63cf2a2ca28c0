"""Backends that run the graph IR. Only tinygrad today (:mod:`dlspec.backend.tinygrad`);
imported lazily so that checking a spec never loads it."""
