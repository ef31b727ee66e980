//! Checks of the deployment files, with the real tools where they run here (HAProxy,
//! nginx, promtool, the Helm engine, kubernetes-validate) and the topology itself run
//! as local processes. What needs Docker or a cluster (building the images, running the
//! compose file or the chart) cannot run on this machine: the static checks stand in.

mod compose;
mod configs;
mod helm;
mod k8s;
mod local_stack;
mod paths;
mod tools;
