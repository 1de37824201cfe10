//! The failed-login counters in PostgreSQL, so that replicas behind a load balancer share
//! one limit instead of granting a guesser a fresh allowance on each of them.

use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;

use crate::store::state::SharedFailures;

pub struct PgFailures {
    pool: PgPool,
}

impl PgFailures {
    pub fn new(pool: PgPool) -> PgFailures {
        PgFailures { pool }
    }
}

#[async_trait]
impl SharedFailures for PgFailures {
    async fn failures(&self, ip: IpAddr, user: &str, window: Duration) -> Result<u32, String> {
        let n: Option<i32> = sqlx::query_scalar(
            "SELECT failures FROM login_failures WHERE address = $1 AND username = $2 \
             AND window_start > now() - make_interval(secs => $3)",
        )
        .bind(ip.to_string())
        .bind(user)
        .bind(window.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok(n.unwrap_or(0).max(0) as u32)
    }

    async fn failed(&self, ip: IpAddr, user: &str, window: Duration) -> Result<(), String> {
        // A window that has run out starts again at one failure.
        sqlx::query(
            "INSERT INTO login_failures (address, username, window_start, failures) \
             VALUES ($1, $2, now(), 1) \
             ON CONFLICT (address, username) DO UPDATE SET \
               failures = CASE WHEN login_failures.window_start > now() - make_interval(secs => $3) \
                          THEN login_failures.failures + 1 ELSE 1 END, \
               window_start = CASE WHEN login_failures.window_start > now() - make_interval(secs => $3) \
                              THEN login_failures.window_start ELSE now() END",
        )
        .bind(ip.to_string())
        .bind(user)
        .bind(window.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        // Expired rows go with the writes that could have made them, a few at a time.
        sqlx::query(
            "DELETE FROM login_failures WHERE ctid IN (SELECT ctid FROM login_failures \
             WHERE window_start < now() - make_interval(secs => $1) LIMIT 100)",
        )
        .bind(window.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn succeeded(&self, ip: IpAddr, user: &str) -> Result<(), String> {
        sqlx::query("DELETE FROM login_failures WHERE address = $1 AND username = $2")
            .bind(ip.to_string())
            .bind(user)
            .execute(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}
