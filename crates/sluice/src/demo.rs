//! The sample data `sluice up` starts with: a SQLite "warehouse" of a few years of daily
//! sales by region, product and channel, plus products and customers. It is generated from
//! a fixed seed, so every machine gets the same rows and tests can assert on them.

use sqlx::{Connection, SqliteConnection, sqlite::SqliteConnectOptions};
use std::path::Path;

pub const REGIONS: [&str; 4] = ["EU", "NA", "APAC", "LATAM"];
pub const CHANNELS: [&str; 3] = ["online", "retail", "partner"];
const CATEGORIES: [&str; 5] = [
    "hardware",
    "software",
    "services",
    "accessories",
    "training",
];
const SEGMENTS: [&str; 3] = ["enterprise", "mid-market", "smb"];
pub const PRODUCTS: i64 = 60;
pub const CUSTOMERS: i64 = 2000;
pub const FIRST_DAY: &str = "2022-01-01";
pub const DAYS: i64 = 3 * 365 + 1;
/// Sales rows per day; DAYS × this is the table size (≥ 200k).
pub const ROWS_PER_DAY: i64 = 200;

/// SplitMix64: tiny, fast and the same everywhere, which is all sample data needs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Create the warehouse file unless it is already complete. Built under a temporary name
/// and renamed, so a kill half-way never leaves a partial warehouse behind.
pub async fn ensure_warehouse(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let tmp = path.with_extension("db.partial");
    let _ = std::fs::remove_file(&tmp);
    let opts = SqliteConnectOptions::new()
        .filename(&tmp)
        .create_if_missing(true);
    let mut c = SqliteConnection::connect_with(&opts).await?;
    let mut tx = c.begin().await?;
    sqlx::raw_sql(
        "create table products (id integer primary key, name text not null, category text not null, unit_price real not null);
         create table customers (id integer primary key, name text not null, region text not null, segment text not null);
         create table sales (day date not null, region text not null, product_id integer not null references products(id),
                             channel text not null, customer_id integer not null references customers(id),
                             units integer not null, amount real not null);",
    )
    .execute(&mut *tx)
    .await?;
    let mut rng = Rng(20240101);
    let mut prices = Vec::new();
    for id in 1..=PRODUCTS {
        let category = CATEGORIES[(id as usize) % CATEGORIES.len()];
        let price = (5 + rng.below(995)) as f64 + (rng.below(100) as f64) / 100.0;
        prices.push(price);
        sqlx::query("insert into products values (?, ?, ?, ?)")
            .bind(id)
            .bind(format!("{} {}", capitalize(category), id))
            .bind(category)
            .bind(price)
            .execute(&mut *tx)
            .await?;
    }
    for id in 1..=CUSTOMERS {
        sqlx::query("insert into customers values (?, ?, ?, ?)")
            .bind(id)
            .bind(format!("Customer {id:04}"))
            .bind(REGIONS[rng.below(4) as usize])
            .bind(SEGMENTS[rng.below(3) as usize])
            .execute(&mut *tx)
            .await?;
    }
    let first = chrono::NaiveDate::parse_from_str(FIRST_DAY, "%Y-%m-%d")?;
    // Multi-row inserts: one statement per 100 rows is ~20× faster than row by row.
    let row_sql = "(?, ?, ?, ?, ?, ?, ?)";
    let batch = 100;
    let stmt = format!(
        "insert into sales values {}",
        vec![row_sql; batch].join(", ")
    );
    for d in 0..DAYS {
        let day = (first + chrono::Duration::days(d))
            .format("%Y-%m-%d")
            .to_string();
        for _ in 0..ROWS_PER_DAY / batch as i64 {
            let mut q = sqlx::query(&stmt);
            for _ in 0..batch {
                let product = 1 + rng.below(PRODUCTS as u64) as i64;
                let units = 1 + rng.below(20) as i64;
                let discount = 1.0 - (rng.below(20) as f64) / 100.0;
                let amount = ((prices[(product - 1) as usize] * units as f64 * discount) * 100.0)
                    .round()
                    / 100.0;
                q = q
                    .bind(day.clone())
                    .bind(REGIONS[rng.below(4) as usize])
                    .bind(product)
                    .bind(CHANNELS[rng.below(3) as usize])
                    .bind(1 + rng.below(CUSTOMERS as u64) as i64)
                    .bind(units)
                    .bind(amount);
            }
            q.execute(&mut *tx).await?;
        }
    }
    sqlx::raw_sql("create index sales_region_day on sales(region, day); create index sales_day on sales(day);")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    c.close().await?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// The example feeds deployed into `demo` on first start.
pub const EXAMPLE_FEEDS: &[(&str, &str)] = &[
    ("hello.py", include_str!("../../../examples/feeds/hello.py")),
    (
        "sales_by_region.py",
        include_str!("../../../examples/feeds/sales_by_region.py"),
    ),
    (
        "customer_segments.py",
        include_str!("../../../examples/feeds/customer_segments.py"),
    ),
    (
        "monthly_revenue.py",
        include_str!("../../../examples/feeds/monthly_revenue.py"),
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    #[tokio::test]
    async fn warehouse_is_deterministic_and_big_enough() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.db");
        let b = dir.path().join("b.db");
        ensure_warehouse(&a).await.unwrap();
        ensure_warehouse(&b).await.unwrap();
        let mut sums = Vec::new();
        for p in [&a, &b] {
            let mut c = SqliteConnection::connect_with(&SqliteConnectOptions::new().filename(p))
                .await
                .unwrap();
            let row = sqlx::query("select count(*), round(sum(amount), 2), min(day), max(day), count(distinct region) from sales")
                .fetch_one(&mut c)
                .await
                .unwrap();
            let n: i64 = row.get(0);
            assert!(n >= 200_000, "{n} rows");
            assert_eq!(row.get::<String, _>(2), FIRST_DAY);
            assert_eq!(row.get::<i64, _>(4), 4);
            sums.push(row.get::<f64, _>(1));
            let p: i64 = sqlx::query_scalar("select count(*) from products")
                .fetch_one(&mut c)
                .await
                .unwrap();
            assert_eq!(p, PRODUCTS);
        }
        assert_eq!(sums[0], sums[1], "same seed, same data");
        assert!(!a.with_extension("db.partial").exists());
    }
}
