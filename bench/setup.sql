-- 100k rows of realistic mixed types: the table every extract benchmark reads.
-- Deterministic (setseed) so runs are comparable.
select setseed(0.42);
create table orders (
    id          bigint primary key,
    customer    text not null,
    amount      numeric(10,2) not null,
    created_at  timestamptz not null,
    status      text not null,
    score       double precision not null
);
insert into orders
select g,
       'customer-' || lpad((1 + floor(random() * 5000))::int::text, 5, '0') || ' ' ||
           (array['Acme Corp','Globex','Initech','Umbrella','Stark Industries','Wayne Enterprises'])[1 + floor(random() * 6)::int],
       round((random() * 9999)::numeric, 2),
       timestamptz '2023-01-01 00:00:00+00' + (random() * interval '730 days'),
       (array['pending','paid','shipped','delivered','refunded'])[1 + floor(random() * 5)::int],
       random() * 100
from generate_series(1, 100000) as g;
analyze orders;
