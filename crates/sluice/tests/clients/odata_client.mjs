// Read a whole feed with @odata/client (npm), the OData client of SAP/UI5-style web apps.
//
//     node odata_client.mjs SERVICE_ROOT KEY
//
// The client sends Basic credentials and asks for small pages; every @odata.nextLink is
// followed through the client (its query options become the next request's). Prints one
// JSON line: rows read, pages fetched and the first row's day.
import { OData } from "@odata/client";

const [root, key] = process.argv.slice(2);
const client = OData.New4({
  serviceEndpoint: root,
  credential: { username: "sluice", password: key },
  commonHeaders: { Prefer: "odata.maxpagesize=100" },
});

let params = client.newParam();
let rows = 0;
let pages = 0;
let firstDay;
for (;;) {
  const res = await client.newRequest({ collection: "sales_by_region", method: "GET", params });
  if (res.error) throw new Error(JSON.stringify(res.error));
  pages += 1;
  firstDay ??= res.value[0]?.day;
  rows += res.value.length;
  const next = res["@odata.nextLink"];
  if (!next) break;
  if (!next.startsWith(root)) throw new Error(`nextLink ${next} is not under the service root ${root}`);
  params = client.newParam();
  for (const [k, v] of new URL(next).searchParams) params.custom(k, v);
}
console.log(JSON.stringify({ rows, pages, first_day: firstDay }));
