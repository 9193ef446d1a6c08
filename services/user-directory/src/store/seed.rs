//! Bulk seeding for benchmarks and capacity tests: many tenants of many users, written set-wise
//! (one statement per batch of tenants), without events (seeded users are not provisioned: no
//! identity provider sent them, and nobody is to be told about them). Never for production data.

use sqlx::Row;
use uuid::Uuid;

use super::Store;

/// What a seeding wrote.
#[derive(Debug, Clone, Copy, Default)]
pub struct Seeded {
    pub tenants: u64,
    pub users: u64,
}

impl Store {
    /// Creates `tenants` tenants `<prefix>-<n>` of `users_per_tenant` users each (source
    /// `import`), plus `extra_users` users in the existing tenant `into` when given; in batches of
    /// at most 100 tenants (or 100,000 users) per transaction.
    pub async fn seed(
        &self,
        prefix: &str,
        tenants: u64,
        users_per_tenant: u64,
        into: Option<(&str, u64)>,
    ) -> Result<Seeded, sqlx::Error> {
        let mut done = Seeded::default();
        if let Some((subdomain, n)) = into {
            let mut tx = self.system_unbounded().await?;
            let id: Uuid = sqlx::query_scalar("SELECT id FROM tenants WHERE subdomain = $1")
                .bind(subdomain)
                .fetch_one(&mut *tx)
                .await?;
            done.users += insert_users(&mut tx, &[id], &[subdomain.to_owned()], n, prefix).await?;
            tx.commit().await?;
        }
        let per_batch = (100_000 / users_per_tenant.max(1)).clamp(1, 100);
        let mut next = 0;
        while next < tenants {
            let count = per_batch.min(tenants - next);
            let names: Vec<String> = (next..next + count).map(|n| format!("{prefix}-{n}")).collect();
            let ids: Vec<Uuid> = names.iter().map(|_| Uuid::now_v7()).collect();
            let mut tx = self.system_unbounded().await?;
            sqlx::query(
                "INSERT INTO tenants (id, subdomain, display_name) SELECT id, name, name FROM unnest($1::uuid[], $2::text[]) AS t(id, name)",
            )
            .bind(&ids)
            .bind(&names)
            .execute(&mut *tx)
            .await?;
            done.users += insert_users(&mut tx, &ids, &names, users_per_tenant, prefix).await?;
            tx.commit().await?;
            done.tenants += count;
            next += count;
        }
        Ok(done)
    }

    /// How many users the database holds, all tenants together.
    pub async fn count_all_users(&self) -> Result<i64, sqlx::Error> {
        let mut tx = self.system().await?;
        let n = sqlx::query("SELECT count(*) AS n FROM users").fetch_one(&mut *tx).await?.try_get("n")?;
        tx.commit().await?;
        Ok(n)
    }
}

async fn insert_users(
    tx: &mut sqlx::PgConnection,
    ids: &[Uuid],
    names: &[String],
    n: u64,
    prefix: &str,
) -> Result<u64, sqlx::Error> {
    let n = i64::try_from(n).unwrap_or(i64::MAX);
    // Names carry a random run tag, so that seeding an existing tenant twice does not collide.
    let tag = Uuid::new_v4().simple().to_string()[..6].to_owned();
    let done = sqlx::query(
        "INSERT INTO users (tenant_id, id, user_name, user_name_folded, external_id, active, given_name,
            family_name, display_name, email, locale, source, created_at, updated_at, document)
         SELECT t.id, gen_random_uuid(), u.name, lower(u.name), $4 || '-' || $5 || '-' || i, true, 'Seeded', 'User ' || i,
                'Seeded User ' || i, u.name, 'en-US', 'import', now(), now(),
                jsonb_build_object('userName', u.name, 'externalId', $4 || '-' || $5 || '-' || i,
                    'name', jsonb_build_object('givenName', 'Seeded', 'familyName', 'User ' || i),
                    'emails', jsonb_build_array(jsonb_build_object('value', u.name, 'primary', true, 'type', 'work')),
                    'active', true, 'locale', 'en-US')
         FROM unnest($1::uuid[], $2::text[]) AS t(id, sub), generate_series(1, $3) AS i,
              LATERAL (SELECT $4 || '-' || $5 || '-' || i || '@' || t.sub || '.example' AS name) AS u",
    )
    .bind(ids)
    .bind(names)
    .bind(n)
    .bind(prefix)
    .bind(tag)
    .execute(&mut *tx)
    .await?;
    Ok(done.rows_affected())
}
