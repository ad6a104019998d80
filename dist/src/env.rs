//! The torchrun environment contract: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT.
use crate::error::{Error, Result};

/// One process's place in a data-parallel launch, as torchrun (or a SLURM/mpirun wrapper) sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank, `0..world_size` (`RANK`).
    pub rank: usize,
    /// Number of processes (`WORLD_SIZE`).
    pub world_size: usize,
    /// Rank within this host, used to pick the CUDA device (`LOCAL_RANK`, default = `RANK`).
    pub local_rank: usize,
    /// Host of rank 0's TCPStore (`MASTER_ADDR`).
    pub master_addr: String,
    /// Port of rank 0's TCPStore (`MASTER_PORT`).
    pub master_port: u16,
}

impl DistEnv {
    /// Reads the contract from the process environment. `Ok(None)` when `WORLD_SIZE` is unset or
    /// 1 (single process); an error naming the variable when one is missing or malformed.
    pub fn from_env() -> Result<Option<DistEnv>> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`DistEnv::from_env`] with an explicit variable lookup (for tests and wrappers).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<DistEnv>> {
        let world_size = match get("WORLD_SIZE") {
            None => return Ok(None),
            Some(v) => parse::<usize>("WORLD_SIZE", &v)?,
        };
        if world_size == 0 {
            return Err(Error::Env {
                var: "WORLD_SIZE",
                reason: "is 0".into(),
            });
        }
        if world_size == 1 {
            return Ok(None);
        }
        let need = |var: &'static str| {
            get(var).ok_or(Error::Env {
                var,
                reason: format!("is unset (WORLD_SIZE={world_size})"),
            })
        };
        let rank = parse::<usize>("RANK", &need("RANK")?)?;
        if rank >= world_size {
            return Err(Error::Env {
                var: "RANK",
                reason: format!("is {rank}, not below WORLD_SIZE={world_size}"),
            });
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => parse::<usize>("LOCAL_RANK", &v)?,
            None => rank,
        };
        let master_addr = need("MASTER_ADDR")?.trim().to_string();
        if master_addr.is_empty() {
            return Err(Error::Env {
                var: "MASTER_ADDR",
                reason: "is empty".into(),
            });
        }
        let master_port = parse::<u16>("MASTER_PORT", &need("MASTER_PORT")?)?;
        Ok(Some(DistEnv {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
        }))
    }
}

fn parse<T: std::str::FromStr>(var: &'static str, value: &str) -> Result<T> {
    value.trim().parse().map_err(|_| Error::Env {
        var,
        reason: format!("= {value:?} is not a valid {}", std::any::type_name::<T>()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn single_process_when_world_size_unset_or_one() {
        assert_eq!(DistEnv::from_lookup(lookup(&[])).unwrap(), None);
        assert_eq!(
            DistEnv::from_lookup(lookup(&[("WORLD_SIZE", "1")])).unwrap(),
            None
        );
    }

    #[test]
    fn full_contract_parses() {
        let vars = [
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "29500"),
        ];
        let env = DistEnv::from_lookup(lookup(&vars)).unwrap().unwrap();
        assert_eq!(
            env,
            DistEnv {
                rank: 3,
                world_size: 4,
                local_rank: 1,
                master_addr: "10.0.0.1".into(),
                master_port: 29500
            }
        );
    }

    #[test]
    fn missing_or_bad_variables_are_named() {
        let err = DistEnv::from_lookup(lookup(&[("WORLD_SIZE", "2"), ("RANK", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("MASTER_ADDR is unset"), "{err}");
        let vars = [
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "x"),
        ];
        let err = DistEnv::from_lookup(lookup(&vars)).unwrap_err().to_string();
        assert!(err.contains("MASTER_PORT = \"x\""), "{err}");
        let vars = [
            ("WORLD_SIZE", "2"),
            ("RANK", "2"),
            ("MASTER_ADDR", "h"),
            ("MASTER_PORT", "1"),
        ];
        let err = DistEnv::from_lookup(lookup(&vars)).unwrap_err().to_string();
        assert!(err.contains("RANK is 2"), "{err}");
        let err = DistEnv::from_lookup(lookup(&[("WORLD_SIZE", "two")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("WORLD_SIZE"), "{err}");
    }
}
