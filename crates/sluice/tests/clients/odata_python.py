"""Read a whole feed with python-odata (PyPI), as a pandas user of OData would.

    python3 odata_python.py SERVICE_ROOT KEY

The client reflects the entity sets from $metadata, then iterates the query, following
@odata.nextLink; the server is asked for small pages so there are many. Prints one JSON
line: rows read, pages fetched and the first row's day.
"""

import json
import sys

import requests
from odata import ODataService

root, key = sys.argv[1], sys.argv[2]
session = requests.Session()
session.auth = ("sluice", key)
session.headers["Prefer"] = "odata.maxpagesize=100"

pages = 0
plain_get = session.get


def counting_get(*args, **kwargs):
    global pages
    r = plain_get(*args, **kwargs)
    if "/sales_by_region" in r.url:
        pages += 1
    return r


session.get = counting_get
service = ODataService(root, session=session, reflect_entities=True, quiet_progress=True)
Sales = service.entities["sales_by_region"]
rows = list(service.query(Sales))
print(json.dumps({"rows": len(rows), "pages": pages, "first_day": str(rows[0].day)}))
