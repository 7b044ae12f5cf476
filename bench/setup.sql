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

-- The BI suite's table: the same shape, 1M rows.
create table orders_1m as
select g as id,
       'customer-' || lpad((1 + (g * 7919) % 5000)::text, 5, '0') as customer,
       round(((g * 104729) % 999900)::numeric / 100, 2) as amount,
       timestamptz '2023-01-01 00:00:00+00' + ((g * 6151) % 63072000) * interval '1 second' as created_at,
       (array['pending','paid','shipped','delivered','refunded'])[1 + g % 5] as status,
       ((g * 2654435761) % 10000) / 100.0::double precision as score
from generate_series(1::bigint, 1000000) as g;
alter table orders_1m add primary key (id);
analyze orders_1m;
