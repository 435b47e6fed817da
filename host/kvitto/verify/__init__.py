"""Verifying: a month of evidence held against a provider's claims under a municipality's rules.

Case bundles (`case`: the types and registry.toml; `case_csv`: orders.csv and claims.csv;
`case_read`: a bundle's folder; `case_write`, `export`), evidence presence per visit (`taps`,
`visits`), the rules and the municipalities' profiles (`rules/`, `profiles/*.toml`), the
verification API (`check`) and its reports and `kvitto verify` (`report`), judging part of a
month again (`incremental`: what a change reaches; `kept`: `kvitto verify` from a store reusing
its kept findings), the Swedish calendar (`workdays`). Imports `kvitto.store` and
`kvitto.evidence`, never collect or install.
"""
