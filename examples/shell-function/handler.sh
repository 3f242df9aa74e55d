#!/bin/sh
# Uppercases the request body. The watchdog sets Http_Method, Http_Path, Http_Query and one
# Http_<Header> variable per request header; anything written to stderr goes to the log.
echo "handling $Http_Method $Http_Path" >&2
tr 'a-z' 'A-Z'
