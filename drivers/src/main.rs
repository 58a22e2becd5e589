fn main() {
    let _ = arbor::init(arbor::Functions::new());
}
